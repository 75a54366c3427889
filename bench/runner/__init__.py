"""``bench run``: the run plan (``plan``), recipes (``recipes``), the executors (local workers in ``plan``,
Slurm job arrays in ``slurm``) and the run file ``bench status`` reads (``runfile``)."""
