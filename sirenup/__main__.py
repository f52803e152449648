from sirenup.cli.app import main

main()
