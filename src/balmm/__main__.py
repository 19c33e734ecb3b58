from balmm.cli import run

run()
