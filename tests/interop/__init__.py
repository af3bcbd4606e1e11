"""The interoperability suite: Mercato's identity driven by clients nobody here wrote."""
