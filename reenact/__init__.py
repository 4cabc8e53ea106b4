"""reenact: keypoint-driven face reenactment training."""
