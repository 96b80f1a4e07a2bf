"""4D training data: synthetic scenes, the on-disk clip format and the training dataset."""
