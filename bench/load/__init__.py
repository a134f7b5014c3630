"""The API polling load benchmark (``bench/api_load.py`` is the entry point): the scratch
database and its rows, the API process and its CPU counters, the measured phases, the
report and result file, one module each."""
