"""Shadow traffic: the mirrored leg, the paired record of both answers, and their comparison."""
