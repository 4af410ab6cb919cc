"""Key rotation: a new key, every stored secret re-encrypted under it, then the old keys gone.

Safe to interrupt at any point: the new key is written into the key file (beside the old ones)
before any secret is sealed with it, every secret is re-encrypted in one transaction, and the
old keys leave the file only after that transaction has committed. Servers that share the key
file notice the change and seal new secrets with the new key; a secret one of them sealed with
an old key during the rotation is caught by a second pass before the old keys go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gentity.server.db.database import Database
from gentity.server.db.orm import ENCRYPTED_COLUMNS
from gentity.server.security.crypto import (
    SecretBox,
    SecretBoxError,
    new_key,
    read_key_file,
    write_key_file,
)


class RotationError(Exception):
    """The rotation cannot start or could not finish; the message says why and what is left."""


@dataclass(frozen=True)
class Rotation:
    """What a rotation did."""

    resealed: int
    """How many stored secrets were re-encrypted."""
    retired: int
    """How many old keys left the keyring."""


async def rotate_key_file(db: Database, key_file: Path) -> Rotation:
    """Add a new key to ``key_file``, re-encrypt every stored secret, then retire the old keys."""
    try:
        old = read_key_file(key_file)
    except FileNotFoundError:
        raise RotationError(f"there is no key file at {key_file}") from None
    except SecretBoxError as exc:
        raise RotationError(str(exc)) from exc
    fresh = new_key()
    write_key_file(key_file, [fresh, *old])  # from now on both are readable
    box = SecretBox.from_key_file(key_file)
    resealed = await reseal_all(db, box)
    write_key_file(key_file, [fresh])  # only after the re-encryption has committed
    return Rotation(resealed=resealed, retired=len(old))


async def reseal_all(db: Database, box: SecretBox) -> int:
    """Re-encrypt every stored secret not yet under the newest key of ``box``.

    One transaction per pass; a second pass catches what a running server sealed with an old
    key meanwhile. Raises :class:`RotationError` (nothing changed by that pass) if a secret
    does not decrypt with any key of the ring.
    """
    total = 0
    for _pass in range(2):
        async with db.session() as session:
            count = await _reseal(session, box)
            await session.commit()
        total += count
        if count == 0:
            break
    return total


async def _reseal(session: AsyncSession, box: SecretBox) -> int:
    count = 0
    for column in ENCRYPTED_COLUMNS:
        model = column.class_
        rows = (await session.execute(select(model.id, column).where(column.is_not(None)))).all()
        for row_id, blob in rows:
            if box.is_current(blob):
                continue
            try:
                plaintext = box.decrypt(blob, context=row_id)
            except SecretBoxError as exc:
                raise RotationError(
                    f"{model.__tablename__}.{column.key} of {row_id} does not decrypt with any "
                    "key of the keyring; this pass was rolled back"
                ) from exc
            # Compare-and-set: a row a server changed meanwhile (e.g. a key dropped on
            # destroy) keeps the server's value.
            await session.execute(
                update(model)
                .where(model.id == row_id, column == blob)
                .values({column.key: box.encrypt(plaintext, context=row_id)})
            )
            count += 1
    return count
