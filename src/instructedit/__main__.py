"""``python -m instructedit`` runs the command line."""

from instructedit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
