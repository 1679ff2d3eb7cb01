"""topk_accuracy, confusion_matrix and per_class_accuracy on hand-made inputs."""

import math

import torch

from openjepa.evaluate import confusion_matrix, mean_per_class_accuracy, per_class_accuracy, topk_accuracy


def test_topk_accuracy_on_hand_made_logits():
    logits = torch.tensor(
        [
            [0.9, 0.05, 0.03, 0.01, 0.005, 0.005],  # label 0: top1 hit
            [0.1, 0.5, 0.2, 0.1, 0.05, 0.05],  # label 2: 2nd best -> top5 hit only
            [0.3, 0.25, 0.2, 0.1, 0.1, 0.05],  # label 5: last -> miss in both
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # label 3: top1 hit
        ]
    )
    labels = torch.tensor([0, 2, 5, 3])
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    assert acc == {"top1": 0.5, "top5": 0.75}


def test_topk_k_larger_than_classes_is_clipped_and_unknown_label_is_wrong():
    logits = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1, -1])  # -1: a class the probe never saw
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    assert math.isclose(acc["top1"], 1 / 3)
    assert math.isclose(acc["top5"], 2 / 3)


def test_confusion_matrix_rows_are_true_columns_are_pred():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 0, 1, 2, 2, 1])
    cm = confusion_matrix(pred, labels, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]


def test_per_class_accuracy_is_recall_and_nan_for_absent_classes():
    pred = torch.tensor([0, 1, 1, 2])
    labels = torch.tensor([0, 0, 1, 1])
    acc = per_class_accuracy(pred, labels, 4)
    assert acc[:2].tolist() == [0.5, 0.5]
    assert torch.isnan(acc[2:]).all()
    assert mean_per_class_accuracy(pred, labels, 4) == 0.5
