"""Identity (classification) loss with label smoothing (Eq. 10)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against targets (1 - eps) * one_hot + eps / K (Eq. 10), in float32 or the logits' wider dtype
    (float64 logits give a float64 loss, as the released code computes it; fp16/bf16 logits are widened)."""

    def __init__(self, num_classes: int, epsilon: float = 0.1):
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {epsilon}")
        self.num_classes = int(num_classes)
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, expected {self.num_classes}")
        with torch.autocast(device_type=logits.device.type, enabled=False):
            log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
            nll = -log_p.gather(1, pids.view(-1, 1)).squeeze(1)
            uniform = -log_p.mean(dim=1)
            return ((1.0 - self.epsilon) * nll + self.epsilon * uniform).mean()  # Eq. 10
