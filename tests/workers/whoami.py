"""Test worker: report what the process it runs in looks like (no process group needed)."""
import os
import signal
import sys
import tempfile

import psutil

from course_utils.distributed import report

driver = psutil.Process(os.getppid())          # the torchrun process that forked or started this worker
report({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "value": os.environ.get("WORKBOOK_TEST_VALUE"),
        "results_dir": os.environ["WORKBOOK_RESULTS_DIR"], "driver": driver.pid, "launcher": driver.ppid(),
        "driver_session": os.getsid(driver.pid), "driver_cmdline": driver.cmdline(),
        "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "tempdir": tempfile.gettempdir()})
