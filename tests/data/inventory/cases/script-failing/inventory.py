#!/usr/bin/env python3
import sys
sys.stderr.write("cannot reach the CMDB\n")
sys.exit(3)
