"""The project's tooling, one module per job, installed (editable) into every virtualenv the
scripts create (scripts/lib.sh `venv_ensure`), so nothing edits `sys.path`."""
