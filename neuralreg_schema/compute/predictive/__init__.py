"""The predictive model: the network (core, Gaussian readout, shifter, modulator), its data and their
validation, the readout's energy-based start, and the trainer."""
