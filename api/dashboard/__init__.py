"""Static files of the dashboard page (served by ``api.dashboard.routes``).

This folder is a package only so that setuptools' ``package-data`` ships its
``*.html``, ``*.js`` and ``*.css`` files with the wheel.
"""
