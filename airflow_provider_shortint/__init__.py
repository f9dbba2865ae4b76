"""Apache Airflow provider for the HK/US Short Interest API."""

__version__ = "0.1.0"
