"""What every part of bench uses: errors, paths under ``$BENCH_HOME``, inter-process locks and temp names,
progress, threads, the user config and configured model paths, compatibility shims."""
