"""TDS Connector: a trusted data space node."""
