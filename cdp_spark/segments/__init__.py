"""Segments: declarative conditions over profiles, features and scores, with membership history and a report."""
