"""The model store: names that map to verified files, pulled from Hugging Face or imported."""

from candor.store.claims import Claim, check_name
from candor.store.names import ModelName, parse_name
from candor.store.registry import Registry, StoreEntry
from candor.store.service import ListedModel, Removal, Store

__all__ = [
    "Claim",
    "ListedModel",
    "ModelName",
    "Registry",
    "Removal",
    "Store",
    "StoreEntry",
    "check_name",
    "parse_name",
]
