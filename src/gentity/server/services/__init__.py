"""Plain async functions holding the business rules; routers stay thin."""
