"""Losses of Sec. III-C: label-smoothing ID loss (Eq. 10) and batch-hard triplet loss (Eq. 11),
summed over the supervised features (Eq. 12)."""
from loss.id_loss import CrossEntropyLabelSmooth
from loss.reid_loss import ReIDLoss, build_loss, id_accuracy
from loss.triplet import TripletLoss, euclidean_dist, hard_example_mining

__all__ = ["build_loss", "id_accuracy", "ReIDLoss", "CrossEntropyLabelSmooth", "TripletLoss",
           "euclidean_dist", "hard_example_mining"]
