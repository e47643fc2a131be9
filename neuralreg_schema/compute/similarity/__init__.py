"""Similarity matrices: Eqs. 2-6 (rsa), the lowpass / highpass pixel targets, VGG19 features."""
