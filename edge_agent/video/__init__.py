"""Video in the core: tamper and fault watch, the motion gate, and the cameras component."""
