"""TDS Connector: a trusted data space node."""

#: The release (pyproject.toml builds the package's version from it).
__version__ = "0.1.0"
