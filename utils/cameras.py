"""Camera ids given with images to extract features of: one per image, ``None`` or -1 for a camera the model
never saw (the extractors then use the mean of the learned camera embeddings)."""
from typing import List, Optional, Sequence

from .errors import UsageError

UNKNOWN_CAMERA = -1  # the id of an image from no training camera


def camera_id_list(cam_ids: Optional[Sequence[Optional[int]]], n: int, num_cams: Optional[int],
                   noun: str = "images") -> List[int]:
    """``cam_ids`` (None for all unknown, else one id per image) as ``n`` ints, :data:`UNKNOWN_CAMERA` for
    unknown; an id outside [0, num_cams) is refused (``num_cams`` None: no camera input, ids not checked)."""
    ids = [UNKNOWN_CAMERA if c is None else int(c) for c in (cam_ids if cam_ids is not None else [None] * n)]
    if len(ids) != n:
        raise UsageError(f"{len(ids)} camera ids for {n} {noun}")
    if num_cams is not None:
        bad = [c for c in ids if c < UNKNOWN_CAMERA or c >= num_cams]
        if bad:
            raise UsageError(f"camera ids must be in [0, {num_cams}) (the model's training cameras) or "
                             f"{UNKNOWN_CAMERA} for unknown, got {bad[:5]}")
    return ids
