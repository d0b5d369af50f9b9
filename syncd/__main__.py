from syncd.app.cli import main

main()
