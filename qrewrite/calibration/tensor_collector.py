"""`TensorCollector`: every statistic one tensor's range request needs, as one value."""

from __future__ import annotations

from typing import Any

import attrs

from qrewrite.calibration.collectors import ChannelPeaks, Histogram, MinMax, MovingAverageMinMax
from qrewrite.calibration.grid import grid_for
from qrewrite.calibration.power_of_two import PositionVotes, min_mse_exponent
from qrewrite.calibration.requests import PowerOfTwoMethod, RangeRequest
from qrewrite.config.enums import CalibMethod


@attrs.frozen
class TensorCollector:
    """All statistics of one tensor that its request needs."""

    min_max: MinMax = attrs.field(factory=MinMax)
    moving_average: MovingAverageMinMax | None = None
    histogram: Histogram | None = None
    votes: PositionVotes | None = None
    channel_peaks: ChannelPeaks | None = None

    def merge(self, other: TensorCollector) -> TensorCollector:
        moving = self.moving_average
        if moving is not None and other.moving_average is not None:
            moving = moving.merge(other.moving_average)
        histogram = self.histogram
        if histogram is not None and other.histogram is not None:
            histogram = histogram.merge(other.histogram)
        votes = self.votes
        if votes is not None and other.votes is not None:
            votes = votes.merge(other.votes)
        peaks = _merge_peaks(self.channel_peaks, other.channel_peaks)
        return TensorCollector(self.min_max.merge(other.min_max), moving, histogram, votes, peaks)


def _merge_peaks(running: ChannelPeaks | None, other: ChannelPeaks | None) -> ChannelPeaks | None:
    if running is None or other is None:
        return running
    return running.merge(other)


def empty_collector(
    request: RangeRequest,
    options: Any,
    with_histogram: bool = False,
    with_channel_peaks: bool = False,
) -> TensorCollector:
    """Return the collector a request needs, before any sample."""
    moving = None
    if options.CalibMovingAverage and request.method is CalibMethod.MinMax:
        moving = MovingAverageMinMax(options.CalibMovingAverageConstant)
    histogram = Histogram() if request.needs_histogram or with_histogram else None
    votes = None
    if request.method is PowerOfTwoMethod.MinMSE and options.MinMSEModePof2Scale == "MostCommon":
        votes = PositionVotes(grid_for(request, options))
    peaks = ChannelPeaks() if with_channel_peaks else None
    return TensorCollector(MinMax(), moving, histogram, votes, peaks)


def absorb(collector: TensorCollector, sample_stats: TensorCollector) -> TensorCollector:
    """Merge one sample's statistics into a running collector."""
    moving = collector.moving_average
    stats = sample_stats.min_max
    if moving is not None and stats.count > 0:
        moving = moving.update_extremes(stats.min, stats.max)
    histogram = collector.histogram
    votes = collector.votes
    if histogram is not None and sample_stats.histogram is not None:
        histogram = histogram.merge(sample_stats.histogram)
        if votes is not None and sample_stats.histogram.counts.size:
            votes = votes.vote(min_mse_exponent(sample_stats.histogram, votes.grid))
    peaks = _merge_peaks(collector.channel_peaks, sample_stats.channel_peaks)
    return TensorCollector(collector.min_max.merge(stats), moving, histogram, votes, peaks)
