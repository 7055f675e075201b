"""HJ 212-2017: the TCP data link Chinese environmental platforms take dust and noise on."""
