"""Recordings: one scan in memory whatever its source (recording), the simulated V1 experiment
(simulate), the Sensorium 2022 reader (sensorium), and Eq. 1's signal-to-noise weights (reliability)."""
