import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import type { JSONValue } from '@lumino/coreutils';

/** The comm the kernel opens when it loads vllm_magic (vllm_magic/magics/metadata.py). */
const TARGET = 'vllm_magic.notebook';
/** Where the notebook's conversations are kept, saved with the notebook. */
const KEY = 'vllm_magic';

/**
 * Keeps each notebook's vllm_magic conversations in its metadata: the kernel sends them after every
 * change, and hears back what the metadata held when it loads the extension (after a restart, or in a
 * notebook copied without the file beside it).
 */
export function keepConversationsInMetadata(tracker: INotebookTracker): void {
  tracker.widgetAdded.connect((_, panel) => {
    const register = (kernel: Kernel.IKernelConnection | null | undefined): void =>
      kernel?.registerCommTarget(TARGET, (comm, open) => listen(panel, comm, open));
    register(panel.sessionContext.session?.kernel);
    panel.sessionContext.kernelChanged.connect((__, change) => register(change.newValue));
  });
}

function listen(panel: NotebookPanel, comm: Kernel.IComm, _open: KernelMessage.ICommOpenMsg): void {
  comm.onMsg = message => {
    const saved = (message.content.data as { save?: JSONValue }).save;
    if (saved !== undefined) {
      panel.model?.setMetadata(KEY, saved);
    }
  };
  comm.send({ saved: (panel.model?.getMetadata(KEY) as JSONValue | undefined) ?? null });
}
