from chaosml.cli import main

main()
