"""Customers, follow relations, attribution, the customer view, reconciliation."""
