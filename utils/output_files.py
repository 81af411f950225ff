"""Names of the files a run writes into ``OUTPUT_DIR``, defined once for the code that writes them and
the code that reads them. Imports nothing, so light tools (``tools/reproduce.py``) can use it without
loading torch."""

LAST_CHECKPOINT = "last_checkpoint"      # text file naming the newest checkpoint_epoch{N}.pth
BEST_CHECKPOINT = "model_best.pth"       # model weights of the best evaluation (mAP)
RESULTS_FILE = "results.json"            # train_net.py: metrics of the latest and the best evaluation
TEST_RESULTS_FILE = "test_results.json"  # test_net.py: metrics of the evaluated TEST.WEIGHT
