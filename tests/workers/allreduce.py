"""Test worker: all-reduce each rank's (rank + 1) and report the sum; optionally fail, die or hang on one rank."""
import multiprocessing
import os
import signal
import sys
import time

import torch
import torch.distributed as dist

from course_utils.distributed import finish_worker, init_worker, report

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
worker = init_worker()
rank, world = worker.rank, worker.world_size
if mode == "fail" and rank == 1:
    raise ValueError("rank 1 was told to fail")
if mode == "kill" and rank == 1:
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "exit" and rank == 1:
    os._exit(3)
if mode == "hang" and rank == 0:
    time.sleep(3600)
t = torch.tensor([float(rank + 1)], device=worker.device)
dist.all_reduce(t)
report({"rank": rank, "world_size": world, "sum": t.item(), "local_rank": worker.local_rank,
        "node": int(os.environ["GROUP_RANK"]), "backend": worker.backend,
        "forked": multiprocessing.parent_process() is not None})   # forked by torchrun, or a program of its own
finish_worker()
report({"rank": rank, "after_finish": True})   # never runs: finish_worker exits (tested)
