"""Metrics: an independent genre classifier, Frechet/kernel distances via clean-fid, and the evaluation."""
