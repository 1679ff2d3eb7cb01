"""The bottom layer: checkpoint I/O and its errors, atomic writes, seeding, hashing, devices and ranks.

Nothing here imports from the rest of openjepa."""
