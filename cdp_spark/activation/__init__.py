"""Activation: consent-filtered, suppression-checked segment exports with manifests, full or delta."""
