<?php echo 'php says ', 6 * 7, "\n";
