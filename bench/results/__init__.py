"""Result records (``records``), the statistics over them (``stats``), parameter formulas (``params``), the
published tables (``reference``) and the leaderboards ``bench compare`` writes (``compare``)."""
