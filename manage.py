#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    from fleet import audit

    # What a command changes is recorded as done from the command line (`vmss --user NAME`
    # names its user more precisely).
    audit.set_process_default(audit.COMMAND_LINE_CALLER, audit.CLI)
    execute_from_command_line(sys.argv)
