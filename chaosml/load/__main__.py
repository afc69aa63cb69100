import sys

from chaosml.load.driver import main

main(sys.argv[1:])
