"""The regularized classifier: ResNet, the similarity loss (Eqs. 7-10), the recipes, the network, the
trainer, the classification data sets and augmentation, and the centring analysis of Eq. 9."""
