"""Static files of the dashboard page (served by ``api.dashboard.routes``).

This folder is a package only so that setuptools' ``package-data`` ships its
``*.html``, ``*.js`` and ``*.css`` files with the wheel. The page's ES modules stay
flat in this folder (no subfolder), so ``pyproject.toml``'s ``*.js`` pattern ships them all.
"""
