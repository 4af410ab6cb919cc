from gentity.cli.main import main

main()
