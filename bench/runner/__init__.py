"""``bench run``: the run plan (``plan``), recipes (``recipes``), the executors behind one seam (``cells``: local
worker processes, and a cell's life in any worker; ``slurm``: Slurm job arrays) and the run file ``bench status``
reads (``runfile``)."""
