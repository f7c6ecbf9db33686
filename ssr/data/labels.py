"""Label conventions shared by every dataset, transform, loss and metric.

Labels are int64 maps of train ids ``0..K-1``; :data:`IGNORE` marks pixels that carry no label
(void classes, padding added by shifts and crops). Losses and metrics skip them.
"""

from __future__ import annotations

IGNORE = 255
"""The ignore label (ERFNet/Cityscapes convention; docs/method.md §6)."""
