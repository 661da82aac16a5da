"""The scikit-learn names the estimators use, imported in one place.

Private scikit-learn modules (parameter validation, ``validate_data``) move
between releases; keeping the imports here means one file to adapt.
"""

from __future__ import annotations

from numbers import Integral, Real

from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    MetaEstimatorMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.feature_selection import SelectorMixin
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils._array_api import check_same_namespace, get_namespace
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    check_array,
    check_is_fitted,
    column_or_1d,
    indexable,
    validate_data,
)

__all__ = [
    "BaseEstimator",
    "ClassNamePrefixFeaturesOutMixin",
    "HasMethods",
    "Integral",
    "Interval",
    "MetaEstimatorMixin",
    "MetadataRouter",
    "MethodMapping",
    "Real",
    "SelectorMixin",
    "StrOptions",
    "TransformerMixin",
    "_check_sample_weight",
    "_fit_context",
    "_num_samples",
    "_routing_enabled",
    "_safe_indexing",
    "available_if",
    "check_array",
    "check_is_fitted",
    "check_same_namespace",
    "clone",
    "column_or_1d",
    "get_namespace",
    "get_tags",
    "indexable",
    "process_routing",
    "type_of_target",
    "validate_data",
]
