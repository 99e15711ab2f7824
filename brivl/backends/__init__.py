"""Other model families behind the TwoTower protocol (OpenCLIP), built from local files only."""
