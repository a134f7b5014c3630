"""The training-overhead benchmark (``bench/train_overhead.py`` is the entry point): the
variants and their data, the training loops measured, one variant's measurement in its
own process, the comparison and result file, one module each."""
