import sys

from appliance.launch import main

sys.exit(main())
