/**
 * The kernel contract: what the sidebar asks a notebook's kernel, always as a
 * silent request that leaves no trace in the notebook or its history.
 */
import { Kernel, KernelMessage } from '@jupyterlab/services';

/** Python expression: `True` once `%load_ext vllm_magic` ran in the kernel. */
const LOADED_EXPRESSION =
  'get_ipython().magics_manager.registry.get("VLLMMagics") is not None';

/** Python expression: the ipywidgets model id of the kernel's chat panel for the sidebar. */
const MODEL_ID_EXPRESSION =
  '__import__("vllm_magic.panel", fromlist=["panel"]).sidebar_model_id()';

/** An error raised in the kernel, shown as Python shows it: `NameError: name 'x' is not defined`. */
function kernelError(ename: string, evalue: string): Error {
  return new Error(evalue ? `${ename}: ${evalue}` : ename);
}

/** Whether the kernel has loaded the vllm_magic extension. */
export async function isExtensionLoaded(kernel: Kernel.IKernelConnection): Promise<boolean> {
  return (await evaluate(kernel, LOADED_EXPRESSION)) === 'True';
}

/**
 * The model id of the kernel's sidebar chat panel. The panel is made on the
 * first call, by running the expression as code, as a cell would: made while
 * evaluating `user_expressions`, its async client failed later with "bound to
 * a different event loop". Later calls find it cached.
 */
export async function chatModelId(kernel: Kernel.IKernelConnection): Promise<string> {
  const repr = await evaluate(kernel, MODEL_ID_EXPRESSION, MODEL_ID_EXPRESSION);
  const match = /^(['"])(.*)\1$/.exec(repr);
  if (!match) {
    throw kernelError('TypeError', `sidebar_model_id() returned ${repr}, not a str`);
  }
  return match[2];
}

/** Run `%load_ext vllm_magic` in the kernel. */
export async function loadExtension(kernel: Kernel.IKernelConnection): Promise<void> {
  await execute(kernel, '%load_ext vllm_magic');
}

/** The `text/plain` repr of a Python expression evaluated in the kernel (after running `code`). */
async function evaluate(
  kernel: Kernel.IKernelConnection,
  expression: string,
  code = ''
): Promise<string> {
  const reply = await execute(kernel, code, { value: expression });
  const result = reply.user_expressions['value'] as unknown as IExpressionResult;
  if (result.status !== 'ok') {
    throw kernelError(result.ename ?? 'Error', result.evalue ?? '');
  }
  return result.data?.['text/plain'] ?? '';
}

/** One entry of an execute reply's `user_expressions`. */
interface IExpressionResult {
  status: string;
  data?: { 'text/plain'?: string };
  ename?: string;
  evalue?: string;
}

async function execute(
  kernel: Kernel.IKernelConnection,
  code: string,
  userExpressions: Record<string, string> = {}
): Promise<KernelMessage.IExecuteReply> {
  const future = kernel.requestExecute({
    code,
    silent: true,
    store_history: false,
    user_expressions: userExpressions
  });
  const reply = await future.done;
  const content = reply.content;
  if (content.status === 'error') {
    throw kernelError(content.ename, content.evalue);
  }
  if (content.status !== 'ok') {
    throw new Error(`The kernel did not run the request (${content.status}).`);
  }
  return content;
}
