"""Training side of the pose prior (torch): rotations, augmentation, the flow, data loaders, the training loop."""
