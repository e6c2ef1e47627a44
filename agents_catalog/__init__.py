"""The demo personas, as data files, and their typed loader."""

from agents_catalog.loader import Catalog, CatalogError, load_catalog
from agents_catalog.models import Persona

__all__ = ["Catalog", "CatalogError", "Persona", "load_catalog"]
