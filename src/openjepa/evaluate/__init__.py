"""openjepa.evaluate."""

from .attentive import AttentiveProbe, attentive_probe
from .features import POOLINGS, FeatureCache, extract_features, fingerprint
from .knn import knn_classify, knn_eval
from .linear import DEFAULT_LRS, DEFAULT_WDS, linear_probe, logistic_regression_probe
from .lowshot import class_balanced_subset, lowshot_eval
from .metrics import confusion_matrix, mean_per_class_accuracy, per_class_accuracy, topk_accuracy
from .regression import regression_probe

__all__ = [
    "AttentiveProbe",
    "DEFAULT_LRS",
    "DEFAULT_WDS",
    "FeatureCache",
    "POOLINGS",
    "attentive_probe",
    "class_balanced_subset",
    "confusion_matrix",
    "extract_features",
    "fingerprint",
    "knn_classify",
    "knn_eval",
    "linear_probe",
    "logistic_regression_probe",
    "lowshot_eval",
    "mean_per_class_accuracy",
    "per_class_accuracy",
    "regression_probe",
    "topk_accuracy",
]
