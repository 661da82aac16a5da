"""Energy of a run, measured by codecarbon when it is installed, else not at all.

codecarbon (RAPL on Intel and AMD CPUs, NVML on NVIDIA GPUs, a CPU power
model elsewhere) runs offline here: ``OfflineEmissionsTracker`` needs no
network. Without it a run's energy is None and the report says "not
measured": a figure made up from CPU time would look like a measurement.
"""

from __future__ import annotations

import contextlib

__all__ = ["EnergyMeter"]

_JOULES_PER_KWH = 3.6e6
NOT_MEASURED = "not measured (pip install codecarbon to measure)"


class EnergyMeter:
    """``with EnergyMeter() as meter: ...``; then ``meter.joules`` and ``meter.source``.

    Examples
    --------
    >>> from graft.harness._energy import EnergyMeter
    >>> with EnergyMeter(enabled=False) as meter:
    ...     pass
    >>> meter.joules, meter.source
    (None, 'not measured (disabled)')
    """

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.joules, self.source = None, NOT_MEASURED
        self._tracker = None

    def __enter__(self):
        if not self.enabled:
            self.source = "not measured (disabled)"
            return self
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            return self
        with contextlib.suppress(Exception):  # a meter never stops a run
            self._tracker = OfflineEmissionsTracker(
                country_iso_code="USA",  # needed offline; energy does not depend on it
                save_to_file=False,
                log_level="error",
                tracking_mode="process",
            )
            self._tracker.start()
        return self

    def __exit__(self, *exc):
        if self._tracker is None:
            return False
        try:
            self._tracker.stop()
            kwh = float(self._tracker.final_emissions_data.energy_consumed)
        except Exception as error:
            self.source = f"not measured (codecarbon failed: {error})"
            return False
        self.joules = kwh * _JOULES_PER_KWH
        self.source = "codecarbon (offline tracker, process mode)"
        return False
